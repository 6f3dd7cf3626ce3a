#!/bin/bash
# S = main at the session's start (e58e8b9), F = main now; bench ingest of F as the client, in its own process.
cd /tmp/p16
for i in 1 2; do
  for v in S F; do ./prof.sh /tmp/rh$v $v-http-$i; done
  for v in S F; do ./prof.sh /tmp/rh$v $v-rate-$i --rate 40000; done
  for v in S F; do ./prof.sh /tmp/rh$v $v-stream-$i --stream --inflight 4 --drivers 4; done
done
