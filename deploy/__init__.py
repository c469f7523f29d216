"""Deployment and operation: the local fleet supervisor, its nginx template, rolling restarts."""
