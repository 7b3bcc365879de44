"""Infrastructure with no knowledge of deepfakes: errors, params loading, logging, atomic writes, threads."""
