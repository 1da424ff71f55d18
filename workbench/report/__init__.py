"""Notebook execution (Papermill), audio players that play offline, HTML export and the index page."""
