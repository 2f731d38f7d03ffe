"""Test-model builders for tests and benchmarks (never imported by production code): stand-in ONNX files with
the real models' I/O (`onnx_stand_ins`) and tiny random SD-shaped model folders for the E-Adapter
(`tiny_eadapter`)."""
