"""Remotes: a repository's versions on object storage reached through fsspec."""
