"""What people run: the ``deepfake-detector`` command line and the web demo, both on :mod:`deepfake_detector.service`."""
