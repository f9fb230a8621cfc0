"""The one build setting pyproject.toml cannot say: the packages found under kd_search/
plus the shipped studies, which live at the top of the repository (``studies/``, their
one copy in git) and install as the data package ``kd_search.studies``
(``package-dir`` in pyproject.toml maps it)."""

from setuptools import find_namespace_packages, setup

setup(packages=[*find_namespace_packages(include=["kd_search*"]), "kd_search.studies", "kd_search.studies.paper"])
