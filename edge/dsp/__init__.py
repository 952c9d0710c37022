"""DSP reference kernels (numpy, the test oracle) and the backend registry for accelerated ones."""
