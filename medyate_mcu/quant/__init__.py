"""int8 quantization of the frozen backbone (docs/quantization.md): the scheme, weight and
activation quantization, calibration on task data, and the numpy integer reference that the C
int8 kernels are held to bit for bit."""
