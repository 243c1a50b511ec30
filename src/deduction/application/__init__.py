"""The service layer: commands, the poll/report use cases, the log cursor and the ports.

The only code that saves events. It imports the domain, never an adapter or a projection.
"""
