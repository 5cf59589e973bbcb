"""Families of pluggable stores: an interface module and one module per backend each."""
