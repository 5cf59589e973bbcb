"""YAML spec -> loader -> factory -> registry."""
