"""The run folder: its name (`naming`), its lock and epoch-commit journal (`lock`), opening it for training (`opening`),
writing it (`writer`) and reading it (`reader`). Layout: docs/ARCHITECTURE.md, "Run folder contract".
"""
