"""DID Explorer's Streamlit side: caching (`data`), background jobs (`jobs`), layout helpers
(`widgets`, `figures`), and pure selection/query-parameter logic (`selection`, `views`).

Importing this package does not import streamlit: `python -m did_ui.jobs` runs job wrappers
without it, and `selection`/`views`/`jobs` are testable as plain Python.
"""
