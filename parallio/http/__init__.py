"""HTTP/1.1 for parallio: a sans-I/O request parser and response writer."""
