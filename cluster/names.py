"""Where the controller lives in a Ray cluster: its actor name and namespace."""

CONTROLLER_NAME = "tessera-controller"
NAMESPACE = "tessera"
