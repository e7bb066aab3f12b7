# The escape suite's attempts (tests/tests/escape.rs), run by python3 inside
# one pallium session per (mode, view). escape.rs puts `CFG = {...}` before
# this text. Each attempt runs in a forked child (a seccomp kill or a hang
# takes only that attempt down) and reports one or more lines
#   RESULT <tag> <blocked|ESCAPED|ERROR|COVERED:<tag>> <detail>
# `blocked` only when the attempt failed for the reason it names;
# `COVERED:<tag>`: a tool is missing here and row <tag> covers the surface.

import ctypes
import errno
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading

GV = CFG['gvisor']  # noqa: F821 (CFG is prepended by escape.rs)
L = ctypes.CDLL(None, use_errno=True)
L.syscall.restype = ctypes.c_long
OUT = None  # the pipe to the parent, in an attempt's child


def sc(*a):
    ctypes.set_errno(0)
    r = L.syscall(*[ctypes.c_long(x) if isinstance(x, int) else x for x in a])
    return r, ctypes.get_errno()


def en(e):
    return errno.errorcode.get(e, str(e))


def res(tag, verdict, detail):
    line = 'RESULT %s %s %s\n' % (tag, verdict, ' '.join(str(detail).split()))
    os.write(OUT, line.encode())


def refused(e, *allowed):
    """An OSError's errno is one of `allowed`."""
    return isinstance(e, OSError) and e.errno in allowed


ATTEMPTS = []


def attempt(tag, timeout=10):
    def deco(f):
        ATTEMPTS.append((tag, f, timeout))
        return f
    return deco


def run(tag, f, timeout):
    global OUT
    r, w = os.pipe()
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        OUT = w
        signal.alarm(timeout)
        try:
            f(tag)
        except Exception as e:
            res(tag, 'ERROR', 'exception: %r' % (e,))
        os._exit(0)
    os.close(w)
    data = b''
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        data += b
    os.close(r)
    _, st = os.waitpid(pid, 0)
    lines = [l for l in data.decode(errors='replace').splitlines() if l.startswith('RESULT ')]
    if os.WIFSIGNALED(st):
        sig = os.WTERMSIG(st)
        if sig == signal.SIGSYS:
            lines.append('RESULT %s blocked killed by SIGSYS' % tag)
        elif sig == signal.SIGALRM:
            lines.append('RESULT %s ERROR timed out after %d s' % (tag, timeout))
        else:
            lines.append('RESULT %s ERROR killed by signal %d' % (tag, sig))
    elif not lines:
        lines.append('RESULT %s ERROR the attempt reported nothing' % tag)
    for l in lines:
        print(l, flush=True)


def unix_connect(path, tag):
    """Connect to a Unix socket (`\\0…` = abstract) of any type and announce
    `tag`: None when connected, else the OSError."""
    err = None
    for kind in (socket.SOCK_STREAM, socket.SOCK_SEQPACKET, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_UNIX, kind)
        s.settimeout(2)
        try:
            s.connect(path)
            try:
                s.sendall(('%s\n' % tag).encode())
            except OSError:
                pass
            return None
        except OSError as e:
            err = e
            if e.errno != errno.EPROTOTYPE:
                return e
        finally:
            s.close()
    return err


ME = '%s/%s' % (CFG['mode'], CFG['view'])  # what the host listeners log


# 0: the view is the one the row's column names.
@attempt('control')
def control(tag):
    uid = os.getuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = '?'
    rel = os.uname().release
    d = 'uid %d (%s), kernel %s' % (uid, name, rel)
    v = CFG['view']
    if v == 'gvisor':
        ok = rel != CFG['host_release']
    elif v == 'virtuser':
        ok = name == 'esc'
    elif v == 'binds':
        p = CFG['scratch_file']
        try:
            with open(p, 'w') as f:
                f.write('scratch\n')
            ok = True
            d += ', wrote %s (host checked)' % p
        except OSError as e:
            ok = False
            d += ', %s: %s' % (p, e)
    else:
        ok = rel == CFG['host_release']
    res(tag, 'blocked' if ok else 'ERROR', d)


# 1: files of the host outside the view.
def read_secret(tag, path):
    try:
        with open(path) as f:
            data = f.read()
        res(tag, 'ESCAPED' if CFG['secret'] in data else 'ERROR', 'read %s: %r' % (path, data[:40]))
    except OSError as e:
        res(tag, 'blocked' if refused(e, errno.ENOENT, errno.EACCES, errno.EPERM) else 'ERROR', e)


@attempt('host-file-tmp')
def host_file_tmp(tag):
    read_secret(tag, CFG['secret_path'])


if CFG['root_marker']:
    @attempt('host-file-root')
    def host_file_root(tag):
        read_secret(tag, CFG['root_marker'])


# 2: writes outside the view: the host is checked afterwards.
@attempt('host-dir-write')
def host_dir_write(tag):
    p = os.path.join(CFG['host_dir'], 'written-' + CFG['view'])
    try:
        os.makedirs(CFG['host_dir'], exist_ok=True)
        with open(p, 'w') as f:
            f.write('x')
        res(tag, 'blocked', 'wrote %s inside the sandbox (host checked)' % p)
    except OSError as e:
        res(tag, 'blocked', 'not writable: %s' % e)


@attempt('usr-write')
def usr_write(tag):
    p = CFG['usr_file']
    try:
        with open(p, 'w') as f:
            f.write('x')
        os.unlink(p)
        res(tag, 'ESCAPED', 'wrote %s' % p)
    except OSError as e:
        res(tag, 'blocked' if refused(e, errno.EROFS, errno.EACCES, errno.EPERM) else 'ERROR', e)


# 3, 4: a host process.
@attempt('host-proc')
def host_proc(tag):
    pid = CFG['victim_pid']
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            cmd = f.read()
        if cmd == b'sleep\x00120\x00':
            res(tag, 'ESCAPED', '/proc/%d is the host victim' % pid)
            return
    except OSError:
        pass
    n = len([p for p in os.listdir('/proc') if p.isdigit()])
    try:
        os.kill(pid, signal.SIGKILL)
        res(tag, 'blocked', '%d pids in /proc; kill(%d) hit a pid of the sandbox (host checked)' % (n, pid))
    except OSError as e:
        res(tag, 'blocked' if refused(e, errno.ESRCH, errno.EPERM) else 'ERROR',
            '%d pids in /proc, kill(%d): %s' % (n, pid, e))


@attempt('host-ptrace')
def host_ptrace(tag):
    pid = CFG['victim_pid']
    r, e = sc(101, 16, pid, 0, 0)  # ptrace(PTRACE_ATTACH)
    if r == 0:
        sc(101, 17, pid, 0, 0)
        res(tag, 'ESCAPED', 'PTRACE_ATTACH %d succeeded' % pid)
    else:
        res(tag, 'blocked' if e in (errno.ESRCH, errno.EPERM) else 'ERROR', 'PTRACE_ATTACH: ' + en(e))


# 5: host Unix sockets.
def connect_row(tag, paths, ok_errnos=(errno.ENOENT, errno.ECONNREFUSED, errno.EACCES, errno.EPERM, errno.ENOTDIR)):
    got, err = [], []
    for p in paths:
        e = unix_connect(p, ME)
        shown = p.replace('\0', '@')
        if e is None:
            got.append(shown)
        else:
            err.append('%s: %s' % (shown, en(e.errno)))
            if e.errno not in ok_errnos:
                res(tag, 'ERROR', '%s: %s' % (shown, e))
                return
    if got:
        res(tag, 'ESCAPED', 'connected to ' + ', '.join(got))
    else:
        res(tag, 'blocked', '; '.join(err))


@attempt('unix-path')
def unix_path(tag):
    connect_row(tag, [CFG['sock_path']])


@attempt('unix-abstract')
def unix_abstract(tag):
    connect_row(tag, ['\0' + CFG['abstract_name']])


# 6: mounts, directly and in a new user namespace.
def mount_tmpfs():
    target = next(d for d in ('/mnt', '/tmp', '/') if os.path.isdir(d))
    r = L.mount(b'none', target.encode(), b'tmpfs', 0, None)
    e = ctypes.get_errno()
    if r == 0:
        L.umount2(target.encode(), 2)
    return r, e, target


@attempt('mount')
def mount(tag):
    r, e, t = mount_tmpfs()
    if r == 0:
        res(tag, 'ESCAPED', 'mounted a tmpfs on ' + t)
    else:
        res(tag, 'blocked' if e in (errno.EPERM, errno.EACCES) else 'ERROR', 'mount tmpfs on %s: %s' % (t, en(e)))


@attempt('mount-userns')
def mount_userns(tag):
    uid, gid = os.getuid(), os.getgid()
    r, e = sc(272, 0x10000000 | 0x20000)  # unshare(CLONE_NEWUSER | CLONE_NEWNS)
    if r != 0:
        res(tag, 'blocked' if e in (errno.EPERM, errno.EINVAL, errno.ENOSPC, errno.EUSERS) else 'ERROR',
            'unshare(NEWUSER|NEWNS): ' + en(e))
        return
    try:
        with open('/proc/self/setgroups', 'w') as f:
            f.write('deny')
        with open('/proc/self/uid_map', 'w') as f:
            f.write('0 %d 1' % uid)
        with open('/proc/self/gid_map', 'w') as f:
            f.write('0 %d 1' % gid)
    except OSError as x:
        res(tag, 'blocked' if refused(x, errno.EPERM, errno.EACCES) else 'ERROR', 'id maps: %s' % x)
        return
    r, e, t = mount_tmpfs()
    if r == 0:
        res(tag, 'ESCAPED', 'mounted a tmpfs on %s in a new user namespace' % t)
    else:
        res(tag, 'blocked' if e in (errno.EPERM, errno.EACCES) else 'ERROR',
            'in a new user namespace, mount tmpfs on %s: %s' % (t, en(e)))


# 7: kernel modules.
@attempt('module')
def module(tag):
    b = ctypes.create_string_buffer(b'\x7fELF' + bytes(60))
    r, e = sc(175, b, 64, b'')
    res(tag, 'blocked' if r == -1 and e in (1, 13, 38) else 'ESCAPED', 'init_module: ' + en(e))
    fd = os.open('/bin/sh', os.O_RDONLY)
    r, e = sc(313, fd, b'', 0)
    res(tag, 'blocked' if r == -1 and e in (1, 13, 38) else 'ESCAPED', 'finit_module: ' + en(e))


# 9: a setuid-root binary of the host's /usr.
@attempt('setuid')
def setuid(tag):
    p = CFG['suid_path']
    try:
        out = subprocess.run([p, '/proc/self/status'], capture_output=True, timeout=5).stdout.decode()
    except OSError as e:
        res(tag, 'ERROR', '%s: %s' % (p, e))
        return
    f = dict(l.split(':', 1) for l in out.splitlines() if ':' in l)
    if 'Uid' not in f:
        res(tag, 'ERROR', 'no status from %s: %r' % (p, out[:80]))
        return
    euid = f['Uid'].split()[1]
    cap = f['CapEff'].strip()
    me = str(os.getuid())
    d = 'setuid cat: euid %s (uid %s), CapEff %s' % (euid, me, cap)
    res(tag, 'ESCAPED' if euid != me or cap != '0000000000000000' else 'blocked', d)


# 11: the kernel keyring.
@attempt('keyring')
def keyring(tag):
    r, e = sc(250, 0, -3, 1)
    res(tag, 'blocked' if r == -1 else 'ESCAPED', 'keyctl(GET_KEYRING_ID): ' + (en(e) if r == -1 else str(r)))
    r, e = sc(248, b'user', b'pallium-escape', b'x', 1, -3)
    res(tag, 'blocked' if r == -1 else 'ESCAPED', 'add_key: ' + (en(e) if r == -1 else str(r)))


# 10, h: the caller's terminal. stdin is not a terminal, so pallium hands the
# command the caller's stdout: fd 1 is the real terminal (escape.rs checks
# outside what reached it).
def terminal_ok(tag):
    """fd 1 is a terminal; reports its (dev, rdev) for escape.rs to compare
    with the caller's."""
    if not os.isatty(1):
        if GV:
            # gVisor hands the caller's terminal in as a plain host file: the
            # ioctls below reach gVisor's kernel only.
            return True
        res(tag, 'ERROR', 'stdout is not a terminal')
        return False
    st = os.fstat(1)
    res('tty', 'blocked', '%d %d' % (st.st_dev, st.st_rdev))
    return True


def ioctl(req, arg):
    import fcntl
    try:
        fcntl.ioctl(1, req, arg)
        return 0
    except OSError as e:
        return e.errno


@attempt('tiocsti')
def tiocsti(tag):
    import termios
    if not terminal_ok(tag):
        return
    n, e = 0, 0
    for c in b'INJECTED\n':
        e = ioctl(termios.TIOCSTI, bytes([c]))
        if e:
            break
        n += 1
    if n:
        res(tag, 'ESCAPED', 'TIOCSTI pushed %d bytes into the caller\'s terminal' % n)
    elif e == errno.EPERM:
        res(tag, 'blocked', 'TIOCSTI: EPERM')
    elif e == errno.EIO:
        res(tag, 'blocked', 'TIOCSTI: EIO (the kernel refuses legacy TIOCSTI)')
    elif GV and e in (errno.ENOTTY, errno.EINVAL):
        res(tag, 'blocked', 'TIOCSTI: %s from gVisor\'s kernel (not passed to the host terminal)' % en(e))
    else:
        res(tag, 'ERROR', 'TIOCSTI: ' + en(e))


@attempt('tioclinux')
def tioclinux(tag):
    if not terminal_ok(tag):
        return
    e = ioctl(0x541C, bytes([6]))  # TIOCLINUX, TIOCL_GETSHIFTSTATE
    if e == 0:
        res(tag, 'ESCAPED', 'TIOCLINUX succeeded on the caller\'s terminal')
    elif e == errno.EPERM:
        res(tag, 'blocked', 'TIOCLINUX: EPERM')
    elif GV and e in (errno.ENOTTY, errno.EINVAL):
        res(tag, 'blocked', 'TIOCLINUX: %s from gVisor\'s kernel (not passed to the host terminal)' % en(e))
    else:
        res(tag, 'ESCAPED', 'not filtered: the host tty driver answered %s (a pty; on a virtual console '
            'TIOCLINUX reads and pastes the screen)' % en(e))


# a: the control plane: the session's control socket and `pallium exec
# --namespace 0` from inside.
REFUSAL = 'refused: the request comes from inside a pallium sandbox'


@attempt('control-plane', timeout=60)
def control_plane(tag):
    pats = ['/run/pallium/*/*/control.sock', '/run/user/*/pallium/*/*/control.sock',
            '/tmp/pallium-*/*/*/control.sock']
    xdg = os.environ.get('XDG_RUNTIME_DIR')
    if xdg:
        pats.append(xdg + '/pallium/*/*/control.sock')
    found = set(p for pat in pats for p in glob.glob(pat))
    # Run directories may be searchable but not listable: the attacker who
    # knows its profile's path computes the directory's name.
    roots = ['/run/pallium', '/run/user/%d/pallium' % CFG['host_uid']] + ([xdg + '/pallium'] if xdg else [])
    for r in roots:
        p = '%s/%s/session_0/control.sock' % (r, CFG['profile_id'])
        if os.path.exists(p):
            found.add(p)
    found = sorted(found)
    if not found:
        seen = [d for d in ('/run/pallium', xdg and xdg + '/pallium') if d and os.path.exists(d)]
        res(tag, 'blocked', 'no control socket visible (searched %s; present but empty or unreadable: %s)'
            % (', '.join(pats), seen or 'none'))
        return
    conn = [(p, unix_connect(p, '')) for p in found]
    ok = [p for p, e in conn if e is None]
    if not ok:
        res(tag, 'blocked', 'control sockets visible but connect failed: %s'
            % '; '.join('%s: %s' % (p, en(e.errno)) for p, e in conn))
        return
    exe = next((p for p in CFG['pallium_candidates'] if os.access(p, os.X_OK)), None)
    if exe is None:
        res(tag, 'ERROR', 'connected to %s but no pallium binary here (%s)' % (ok, CFG['pallium_candidates']))
        return
    prof = CFG['profile_path']
    if not os.path.exists(prof):
        # The attacker knows the profile; it writes its own copy at that path.
        os.makedirs(os.path.dirname(prof), exist_ok=True)
        with open(prof, 'w') as f:
            f.write(CFG['profile_json'])
    env = dict(os.environ)
    mine = [p for p in ok if '/' + CFG['profile_id'] + '/' in p] or ok
    m = re.match(r'(.*)/pallium/[^/]+/[^/]+/control\.sock$', mine[0])
    if m and not mine[0].startswith('/run/pallium/'):
        env['XDG_RUNTIME_DIR'] = m.group(1)
    argv = [exe, 'exec', prof, '--namespace', '0', '--', 'curl', '-sS', '--max-time', '5', CFG['web_url']]
    try:
        p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=40)
    except subprocess.TimeoutExpired:
        res(tag, 'ERROR', 'pallium exec --namespace 0 hung (connected to %s)' % ok)
        return
    out = (p.stdout + p.stderr).decode(errors='replace')
    addrs = re.findall(r'^\s*(\d+\.\d+\.\d+\.\d+)\s*$', p.stdout.decode(errors='replace'), re.M)
    if REFUSAL in out:
        res(tag, 'blocked', 'the supervisor refused: %s' % out.strip())
    elif addrs:
        res(tag, 'ESCAPED', 'connected to %s; %s exec --namespace 0 ran curl outside the sandbox: the web host saw %s'
            % (mine[0], exe, addrs[0]))
    else:
        res(tag, 'ERROR', 'connected to %s; pallium exec (exit %d): %s' % (mine[0], p.returncode, out.strip()[-300:]))


# b: host root's powers: a global sysctl, /etc/shadow, a raw disk, host /tmp.
@attempt('core-pattern')
def core_pattern(tag):
    p = '/proc/sys/kernel/core_pattern'
    try:
        with open(p) as f:
            orig = f.read()
    except OSError as e:
        orig = None
    try:
        with open(p, 'w') as f:
            f.write(CFG['core_marker'])
    except OSError as e:
        if refused(e, errno.EACCES, errno.EROFS, errno.EPERM, errno.ENOENT):
            res(tag, 'blocked', 'write %s: %s' % (p, e))
        else:
            res(tag, 'ERROR', 'write %s: %s' % (p, e))
        return
    try:
        with open(p) as f:
            now = f.read().strip()
    except OSError as e:
        now = str(e)
    if GV:
        # gVisor's own /proc: escape.rs looks at the host's value.
        res(tag, 'blocked', 'the write was accepted by gVisor\'s kernel (reads back %r; host checked)' % now)
        return
    if orig is not None and now == CFG['core_marker']:
        with open(p, 'w') as f:
            f.write(orig)  # put the host's value back at once
    res(tag, 'ESCAPED', 'wrote %s (read back %r; the original was put back)' % (p, now))


@attempt('shadow')
def shadow(tag):
    try:
        with open('/etc/shadow') as f:
            data = f.read()
        res(tag, 'ESCAPED', 'read /etc/shadow (%d lines, first user %r)'
            % (len(data.splitlines()), data.split(':', 1)[0]))
    except OSError as e:
        res(tag, 'blocked' if refused(e, errno.EACCES, errno.EPERM, errno.ENOENT) else 'ERROR', e)


@attempt('raw-disk')
def raw_disk(tag):
    notes = []
    for name, dev in CFG['disks']:
        p = '/dev/' + name
        try:
            fd = os.open(p, os.O_RDONLY)
            n = len(os.read(fd, 512))
            os.close(fd)
            res(tag, 'ESCAPED', 'opened %s and read %d bytes' % (p, n))
            return
        except OSError as e:
            if not refused(e, errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENXIO):
                res(tag, 'ERROR', '%s: %s' % (p, e))
                return
            notes.append('%s: %s' % (p, en(e.errno)))
        # A node of its own for the same device.
        node = CFG['tmp_prefix'] + '-blk-' + name
        major, minor = (int(x) for x in dev.split(':'))
        try:
            os.mknod(node, 0o600 | 0o060000, os.makedev(major, minor))
        except OSError as e:
            notes.append('mknod %s: %s' % (dev, en(e.errno)))
            continue
        try:
            fd = os.open(node, os.O_RDONLY)
            n = len(os.read(fd, 512))
            os.close(fd)
            res(tag, 'ESCAPED', 'mknod %s and read %d bytes' % (dev, n))
            return
        except OSError as e:
            notes.append('mknod %s worked, open: %s' % (dev, en(e.errno)))
        finally:
            os.unlink(node)
    res(tag, 'blocked', '; '.join(notes) or 'no disks')


@attempt('host-tmp')
def host_tmp(tag):
    p = CFG['host_tmp_file']
    try:
        with open(p, 'w') as f:
            f.write('x')
        res(tag, 'blocked', 'created %s in the sandbox\'s /tmp (host checked)' % p)
    except OSError as e:
        res(tag, 'blocked', 'cannot create %s: %s' % (p, e))


# c: host sockets the environment names, and their conventional places.
def bus_paths(addr):
    out = []
    for part in (addr or '').split(';'):
        kv = dict(x.split('=', 1) for x in part.split(':', 1)[-1].split(',') if '=' in x)
        if part.startswith('unix:') and 'path' in kv:
            out.append(kv['path'])
        if part.startswith('unix:') and 'abstract' in kv:
            out.append('\0' + kv['abstract'])
    return out


def env_row(tag, var, conventional, extra=()):
    val = os.environ.get(var)
    paths = list(extra) + [p for p in conventional if p not in extra]
    note = '%s=%s; ' % (var, val) if val is not None else '%s unset; ' % var
    got, err = [], []
    for p in paths:
        e = unix_connect(p, ME)
        shown = p.replace('\0', '@')
        if e is None:
            got.append(shown)
        elif e.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.EACCES, errno.EPERM, errno.ENOTDIR):
            err.append('%s: %s' % (shown, en(e.errno)))
        else:
            res(tag, 'ERROR', note + '%s: %s' % (shown, e))
            return
    if got:
        res(tag, 'ESCAPED', note + 'connected to ' + ', '.join(got))
    else:
        res(tag, 'blocked', note + '; '.join(err))


@attempt('env-dbus')
def env_dbus(tag):
    env_row(tag, 'DBUS_SESSION_BUS_ADDRESS', [CFG['dbus_path']],
            bus_paths(os.environ.get('DBUS_SESSION_BUS_ADDRESS')))


@attempt('env-ssh')
def env_ssh(tag):
    v = os.environ.get('SSH_AUTH_SOCK')
    env_row(tag, 'SSH_AUTH_SOCK', [CFG['ssh_path']], [v] if v else [])


@attempt('env-x11')
def env_x11(tag):
    v = os.environ.get('DISPLAY', '')
    m = re.match(r'^[^:]*:(\d+)', v)
    extra = []
    if m:
        x = '/tmp/.X11-unix/X' + m.group(1)
        extra = [x, '\0' + x]
    env_row(tag, 'DISPLAY', [CFG['x11_path'], '\0' + CFG['x11_path']], extra)


@attempt('runuser-bus')
def runuser_bus(tag):
    xdg = os.environ.get('XDG_RUNTIME_DIR')
    env_row(tag, 'XDG_RUNTIME_DIR', [CFG['runuser_bus']], [xdg + '/bus'] if xdg else [])


# d: the session bus and systemd's user manager through their own tools.
BUS_BLOCKED = ('No such file or directory', 'Connection refused', 'Permission denied',
               'Access denied', 'No medium found', 'not defined', 'Operation not permitted')
# A connection made, then dropped by the bus (under gVisor, its credentials
# do not pass): the socket was reached.
BUS_REACHED = ('Transport endpoint is not connected', 'Connection reset by peer')


@attempt('busctl', timeout=20)
def busctl(tag):
    tool = shutil.which('busctl')
    if not CFG['dbus_daemon']:
        res(tag, 'COVERED:env-dbus', 'n/a: no dbus-daemon on the host; the raw connects of env-dbus cover the bus')
        return
    if not tool:
        res(tag, 'COVERED:env-dbus', 'n/a: tool missing (busctl); the raw connects of env-dbus cover the bus')
        return
    addrs = ['unix:path=' + p for p in bus_paths(os.environ.get('DBUS_SESSION_BUS_ADDRESS')) if p[0] != '\0']
    addrs += ['unix:path=' + CFG['dbus_path'], 'unix:path=' + CFG['runuser_bus']]
    notes = []
    for a in dict.fromkeys(addrs):
        p = subprocess.run([tool, '--address=' + a, 'call', 'org.freedesktop.DBus', '/org/freedesktop/DBus',
                            'org.freedesktop.DBus', 'GetId'], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=8)
        out = (p.stdout + p.stderr).decode(errors='replace').strip()
        if p.returncode == 0:
            res(tag, 'ESCAPED', 'busctl --address=%s GetId: %s (the host\'s bus answered)' % (a, out))
            return
        if any(b in out for b in BUS_REACHED):
            res(tag, 'ESCAPED', 'busctl --address=%s reached the host\'s bus socket: %s' % (a, out))
            return
        if not any(b in out for b in BUS_BLOCKED):
            res(tag, 'ERROR', 'busctl --address=%s: %s' % (a, out))
            return
        notes.append('%s: %s' % (a, out))
    res(tag, 'blocked', '; '.join(notes))


@attempt('systemd-run', timeout=20)
def systemd_run(tag):
    tool = shutil.which('systemd-run')
    if not CFG['dbus_daemon']:
        res(tag, 'COVERED:runuser-bus', 'n/a: no dbus-daemon on the host; the raw connects of runuser-bus cover it')
        return
    if not tool:
        res(tag, 'COVERED:runuser-bus', 'n/a: tool missing (systemd-run); the raw connects of runuser-bus cover it')
        return
    p = subprocess.run([tool, '--user', '--wait', '--quiet', '--collect', '/bin/true'],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=15)
    out = (p.stdout + p.stderr).decode(errors='replace').strip()
    if p.returncode == 0:
        res(tag, 'ESCAPED', 'systemd-run --user ran /bin/true outside the sandbox')
    elif 'org.freedesktop.systemd1' in out or 'transient' in out or any(b in out for b in BUS_REACHED):
        res(tag, 'ESCAPED', 'reached the host\'s session bus (only the missing systemd user manager of this '
            'test host kept the command from running): ' + out)
    elif any(b in out for b in BUS_BLOCKED):
        res(tag, 'blocked', out)
    else:
        res(tag, 'ERROR', 'systemd-run --user (exit %d): %s' % (p.returncode, out))


# e, f, g, j: kernel surfaces the seccomp filter should close.
@attempt('io-uring')
def io_uring(tag):
    params = ctypes.create_string_buffer(120)
    r, e = sc(425, 1, params)
    if r >= 0 and GV:
        os.close(r)
        res(tag, 'blocked', 'io_uring_setup returned fd %d from gVisor\'s own io_uring (the Sentry\'s; '
            'the host kernel\'s is not reached)' % r)
    elif r >= 0:
        os.close(r)
        res(tag, 'ESCAPED', 'io_uring_setup returned fd %d' % r)
    else:
        res(tag, 'blocked' if e in (errno.EPERM, errno.ENOSYS) else 'ERROR', 'io_uring_setup: ' + en(e))


@attempt('vsock')
def vsock(tag):
    r, e = sc(41, 40, 1, 0)  # socket(AF_VSOCK, SOCK_STREAM, 0)
    if r >= 0:
        os.close(r)
        res(tag, 'ESCAPED', 'socket(AF_VSOCK) returned fd %d' % r)
    else:
        res(tag, 'blocked', 'socket(AF_VSOCK): ' + en(e))


def x32(nr, name):
    def f(tag):
        r, e = sc(nr)
        if r == -1 and e in (errno.ENOSYS, errno.EPERM):
            res(tag, 'blocked', '%s: %s' % (name, en(e)))
        elif r == -1:
            res(tag, 'ERROR', '%s: %s' % (name, en(e)))
        else:
            res(tag, 'ESCAPED', '%s returned %d' % (name, r))
    return f


attempt('x32')(x32(0x40000000 | 39, 'x32 getpid (0x40000000|39)'))
attempt('x32')(x32(512, 'syscall 512'))


@attempt('personality')
def personality(tag):
    r, e = sc(135, 0x0040000)  # personality(ADDR_NO_RANDOMIZE)
    if r == -1:
        res(tag, 'blocked', 'personality(ADDR_NO_RANDOMIZE): ' + en(e))
    else:
        res(tag, 'ESCAPED', 'personality(ADDR_NO_RANDOMIZE) accepted (previous 0x%x)' % r)


# i: the sandbox's init.
@attempt('ptrace-init')
def ptrace_init(tag):
    try:
        with open('/proc/1/cmdline', 'rb') as f:
            who = f.read().replace(b'\0', b' ').decode(errors='replace').strip()
    except OSError as e:
        who = str(e)
    got = []
    notes = ['pid 1: ' + who]
    r, e = sc(101, 16, 1, 0, 0)  # PTRACE_ATTACH
    if r == 0:
        os.waitpid(1, 0x40000000)  # __WALL
        sc(101, 17, 1, 0, 0)
        got.append('PTRACE_ATTACH')
    else:
        notes.append('PTRACE_ATTACH: ' + en(e))
    for p in ('/proc/1/mem', '/proc/1/environ'):
        try:
            with open(p, 'rb') as f:
                if p.endswith('environ'):
                    f.read()
            got.append(p)
        except OSError as x:
            notes.append('%s: %s' % (p, en(x.errno)))
    if got and GV and who == CFG['session_command'] and 'PTRACE_ATTACH' not in got:
        res(tag, 'blocked', 'under gVisor pid 1 is the session\'s own command, not an init of pallium\'s '
            '(%s readable, as any process of the application\'s); %s' % (', '.join(got), '; '.join(notes)))
    elif got:
        res(tag, 'ESCAPED', '%s worked; %s' % (', '.join(got), '; '.join(notes)))
    else:
        res(tag, 'blocked', '; '.join(notes))


# k: the host's own addresses (root mode, empty chain).
def gateway():
    try:
        for l in open('/proc/net/route').read().splitlines()[1:]:
            f = l.split()
            if f[1] == '00000000':
                return socket.inet_ntoa(int(f[2], 16).to_bytes(4, 'little'))
    except OSError:
        pass
    return None


if CFG['host_targets'] is not None:
    @attempt('host-addrs')
    def host_addrs(tag):
        gw = gateway()
        targets = [(a.replace('GATEWAY', gw or ''), p) for a, p in CFG['host_targets']]
        targets = [(a, p) for a, p in targets if a]
        outcome = {}

        def one(a, p):
            fam = socket.AF_INET6 if ':' in a else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.settimeout(2)
            try:
                s.connect((a, p))
                s.sendall(('%s\n' % ME).encode())
                outcome[(a, p)] = None
            except OSError as e:
                outcome[(a, p)] = e
            finally:
                s.close()
        ts = [threading.Thread(target=one, args=t) for t in targets]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        got = ['%s:%d' % t for t in targets if outcome.get(t) is None]
        notes = ['%s:%d %s' % (a, p, 'timed out' if isinstance(outcome[(a, p)], socket.timeout)
                                 else en(outcome[(a, p)].errno)) for a, p in targets if outcome.get((a, p))]
        if got:
            res(tag, 'ESCAPED', 'connected to %s (gateway %s); %s' % (', '.join(got), gw, '; '.join(notes)))
        else:
            res(tag, 'blocked', 'gateway %s; %s' % (gw, '; '.join(notes)))


for tag, f, timeout in ATTEMPTS:
    run(tag, f, timeout)
print('ATTEMPTS DONE', flush=True)
