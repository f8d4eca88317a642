"""Result records: the column table, building, the schema check, reading and writing."""
