"""Browser tests of the notebooks in JupyterLab (a package, so that its conftest does not shadow tests/conftest.py)."""
