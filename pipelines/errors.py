class ModelDirectoryError(ValueError):
    """A model directory is missing, malformed, or holds weights we refuse to load."""
