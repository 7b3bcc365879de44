"""CI and setup tooling run from a checkout (python tools/<name>.py); not part of the runtime package."""
