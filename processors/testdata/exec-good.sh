#!/bin/sh
# A well-behaved exec program for the exec processor's tests: for each
# request line it answers {"id":..,"output":{"name":..,"name_length":..}},
# or an error reply when the input's name is "bad". POSIX sh and awk only.
exec awk '
{
	id = ""; if (match($0, /"id":"[^"]*"/)) id = substr($0, RSTART + 6, RLENGTH - 7)
	name = ""; if (match($0, /"name":"[^"]*"/)) name = substr($0, RSTART + 8, RLENGTH - 9)
	if (name == "bad")
		printf "{\"id\":\"%s\",\"error\":\"no such company\"}\n", id
	else
		printf "{\"id\":\"%s\",\"output\":{\"name\":\"%s\",\"name_length\":%d}}\n", id, name, length(name)
	fflush()
}'
