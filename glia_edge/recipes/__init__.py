"""Recipes that build what the package ships (``python -m glia_edge.recipes.NAME``)."""
