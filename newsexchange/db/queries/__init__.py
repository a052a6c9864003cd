"""The SQL each step runs, one module per table group; steps call these and speak in plain
values (or the ORM rows these return)."""
