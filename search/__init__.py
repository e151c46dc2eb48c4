"""The service: command line, studies, workers, export."""
