#!/bin/sh
# An exec program that answers three requests, then reads a fourth, writes
# a last word to stderr and exits with status 3, abandoning what it holds.
exec awk '
NR <= 3 {
	id = ""; if (match($0, /"id":"[^"]*"/)) id = substr($0, RSTART + 6, RLENGTH - 7)
	printf "{\"id\":\"%s\",\"output\":{\"n\":%d}}\n", id, NR
	fflush()
	next
}
{
	print "fatal: simulated crash on request " NR > "/dev/stderr"
	exit 3
}'
