# The escape suite's host listeners (tests/tests/escape.rs): Unix sockets
# (pathname and abstract) and TCP ports a sandboxed application must not
# reach. Each connection is logged as `<listener> <tag>`, the tag being the
# first line the client sent within a second (`?` if none).
# argv[1]: {"log": PATH, "unix": [[NAME, PATH]], "abstract": [[NAME, ADDR]],
#           "tcp": [[NAME, HOST, PORT]]}

import json
import os
import select
import socket
import sys
import threading

cfg = json.loads(sys.argv[1])
socks = {}
for name, path in cfg['unix']:
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    os.chmod(path, 0o777)
    socks[s] = name
for name, addr in cfg['abstract']:
    s = socket.socket(socket.AF_UNIX)
    s.bind('\0' + addr)
    socks[s] = name
for name, host, port in cfg['tcp']:
    s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    socks[s] = name
for s in socks:
    s.listen(16)
lock = threading.Lock()


def serve(c, name):
    c.settimeout(1)
    try:
        tag = c.recv(64).decode(errors='replace').strip() or '?'
    except OSError:
        tag = '?'
    c.close()
    with lock, open(cfg['log'], 'a') as f:
        f.write('%s %s\n' % (name, tag.split()[0] if tag.split() else '?'))


print('ready', flush=True)
while True:
    r, _, _ = select.select(list(socks), [], [])
    for s in r:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c, socks[s]), daemon=True).start()
