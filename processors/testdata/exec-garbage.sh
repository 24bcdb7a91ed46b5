#!/bin/sh
# An exec program that writes junk around its replies: a plain text line, a
# reply to an id nobody asked for, and a truncated JSON line, then the real
# reply.
exec awk '
{
	id = ""; if (match($0, /"id":"[^"]*"/)) id = substr($0, RSTART + 6, RLENGTH - 7)
	print "loading model weights... done"
	print "{\"id\":\"no-such-request\",\"output\":{}}"
	print "{\"id\":\"" id "\",\"output\":{\"trunc"
	printf "{\"id\":\"%s\",\"output\":{\"ok\":true}}\n", id
	fflush()
}'
