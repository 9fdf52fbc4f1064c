"""Pure numerical functions: no I/O, no framework, arrays in and numbers out."""
