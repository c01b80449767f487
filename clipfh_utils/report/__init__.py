"""What a reader sees: metrics gathered into tables (current invocation vs earlier runs), figures,
the index page. Reads run records and metrics files; never trains or evaluates."""
