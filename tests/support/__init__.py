"""Test support: data sets from outside billetjax (another renderer, real annotation tools' layouts)."""
