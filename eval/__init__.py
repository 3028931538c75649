"""The evaluation harness. (Mind that ``import eval`` names this package, not the builtin.)"""
