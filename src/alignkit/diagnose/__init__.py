"""Diagnosis: the pre-flight `doctor` (checks of data, template, model and hyper-parameters before anything
runs) and the live symptom rules that watch a run's metrics."""
