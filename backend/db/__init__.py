"""The system of record: every message and change, kept forever in one SQL
database (PostgreSQL in a fleet, a SQLite file when embedded).

``schema`` is the one description of the tables, ``migrations`` brings any
database to it, ``archive`` reads and writes it.
"""
