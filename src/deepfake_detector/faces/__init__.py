"""Faces: MTCNN detection and crops (detection), dense landmarks, and the blending that makes self-blended fakes."""
