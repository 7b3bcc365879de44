"""The network and its training: architectures and checkpoints, transforms, datasets, SBI, loops, the training run."""
