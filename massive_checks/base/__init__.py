"""The base: names, errors, atomic files, lazy modules, YAML with line numbers and the options; no
torch, no pytest, no other package of massive_checks."""
