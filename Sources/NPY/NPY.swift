// NumPy .npy reader/writer (being written).
