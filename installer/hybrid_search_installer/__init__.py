"""Installer and command line for hybrid_search (the `hybrid-search` command)."""
