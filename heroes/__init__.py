"""heroes: media triage for child-abuse and human-trafficking investigations."""

__version__ = "0.1.0"
