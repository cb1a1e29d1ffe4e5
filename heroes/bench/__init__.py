"""The research harness: accuracy and speed of models chosen by manifest, on public dataset formats.

``metrics`` holds the numbers this field reports (pure numpy, checked against scikit-learn in the
tests); ``datasets`` reads the public datasets' own layouts; ``scorers`` turns a manifest into the
one call a benchmark needs (image -> age, nudity score, face or scene vector); ``accuracy`` and
``speed`` put them together behind ``heroes bench``.
"""
