"""DID Explorer's engine: score preference data with a reference and DPO checkpoints, and
compute the Differential Information Distribution diagnostics of arXiv:2505.23761.

Never imports streamlit.
"""

__version__ = "0.1.0"
