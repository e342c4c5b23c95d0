"""The bundled search spaces, one YAML file each; `search_space=NAME` selects `NAME.yaml`.

The format (choice, int and float ranges, fixed values, optional `sweep:` defaults) is described
in `sweep/search_space.py` and in the README.
"""
