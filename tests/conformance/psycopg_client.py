"""scripts/conformance client: psycopg 3 (Debian python3-psycopg). One JSON line per case."""
import threading

import psycopg
from psycopg import pq, sql

from confcommon import (CA, DB, FULL, HOST, LARGE_TIMEOUT_S, PASSWORD, PORT, USER, run_case, sha,
                        track_socket)

TYPES_SQL = open(__file__.replace("psycopg_client.py", "types.sql")).read().strip()


def error_obs(e):
    if isinstance(e, psycopg.Error) and e.diag.sqlstate:
        d = e.diag
        o = {"sqlstate": d.sqlstate, "severity": d.severity_nonlocalized, "message": d.message_primary,
             "detail": d.message_detail, "hint": d.message_hint, "position": d.statement_position,
             "context": d.context, "schema": d.schema_name, "table": d.table_name,
             "column": d.column_name, "constraint": d.constraint_name,
             "class": type(e).__name__}
        return {k: v for k, v in o.items() if v is not None}
    return {"class": type(e).__name__, "message": str(e).strip().split("\n")[0]}


def connect(**kw):
    params = dict(host=HOST, port=PORT, user=USER, password=PASSWORD, dbname=DB,
                  sslmode="verify-ca", sslrootcert=CA)
    params.update(kw)
    c = psycopg.connect(**params)
    track_socket(c.pgconn.socket)
    return c


def case(name, timeout=None, full_only=False):
    def deco(fn):
        global conn
        if conn.broken or conn.closed:  # an earlier case timed out on it: a new one
            conn = connect(autocommit=True)
        run_case(name, fn, error_obs, timeout=timeout, full_only=full_only)
        return fn
    return deco


def expect_error(fn):
    try:
        fn()
        return False, "no error"
    except psycopg.Error as e:
        return True, error_obs(e)


def desc(cur):
    return [(d.name, d.type_code) for d in cur.description or []]


conn = connect(autocommit=True)


@case("connect.parameters")
def _():
    keys = ["server_version", "server_encoding", "client_encoding", "DateStyle", "IntervalStyle",
            "TimeZone", "integer_datetimes", "standard_conforming_strings", "is_superuser",
            "session_authorization", "application_name", "default_transaction_read_only",
            "in_hot_standby"]
    return True, {k: conn.info.parameter_status(k) for k in keys}


@case("connect.info")
def _():
    i = conn.info
    return True, {"server_version": i.server_version, "protocol": conn.pgconn.protocol_version,
                  "encoding": i.encoding, "pid_matches": i.backend_pid == conn.execute(
                      "select pg_backend_pid()").fetchone()[0], "status": i.status.name}


@case("simple.libpq_exec_multi")
def _():
    r = conn.pgconn.exec_(b"select 1 as a; select 'x' as b")
    return r.status == pq.ExecStatus.TUPLES_OK, {"status": pq.ExecStatus(r.status).name, "value": r.get_value(0, 0),
                                                  "fname": r.fname(0)}


@case("simple.execute_no_params")
def _():
    cur = conn.execute("select 1 as a, 'x'::text as b, null as c")
    return True, {"rows": cur.fetchall(), "desc": desc(cur), "status": cur.statusmessage}


@case("types.text")
def _():
    cur = conn.cursor()
    cur.execute(TYPES_SQL + " where %s = 1", (1,))
    row = cur.fetchone()
    return True, {"row": [repr(v) for v in row], "desc": desc(cur)}


@case("types.binary")
def _():
    cur = conn.cursor(binary=True)
    cur.execute(TYPES_SQL + " where %s = 1", (1,))
    row = cur.fetchone()
    return True, {"row": [repr(v) for v in row], "desc": desc(cur)}


@case("types.binary_raw")
def _():
    r = conn.pgconn.exec_params(TYPES_SQL.encode(), [], result_format=pq.Format.BINARY)
    return r.status == pq.ExecStatus.TUPLES_OK, [
        None if r.get_value(0, i) is None else bytes(r.get_value(0, i)).hex()
        for i in range(r.nfields)]


@case("types.roundtrip_params")
def _():
    import datetime, decimal, uuid
    vals = (1, 2 ** 40, 1.25, decimal.Decimal("1.000001"), True, "tëxt", b"\x00\xff",
            datetime.date(2024, 2, 29), datetime.datetime(2024, 1, 2, 3, 4, 5, 6),
            datetime.timedelta(days=3, seconds=5), uuid.UUID(int=5), [1, 2, None], None)
    out = {}
    for binary in (False, True):
        cur = conn.cursor(binary=binary)
        cur.execute("select " + ", ".join(["%s"] * len(vals)), vals)
        out[str(binary)] = [repr(v) for v in cur.fetchone()]
    return out["False"] == out["True"], out


@case("prepared.auto_prepare")
def _():
    res = [conn.execute("select %s::int * 2", (i,), prepare=True).fetchone()[0] for i in range(6)]
    return res == [0, 2, 4, 6, 8, 10], res


@case("prepared.libpq_prepare_describe")
def _():
    pg = conn.pgconn
    r = pg.prepare(b"conf_ps", b"select $1::int + $2::int as s, $1::text as t")
    d = pg.describe_prepared(b"conf_ps")
    e = pg.exec_prepared(b"conf_ps", [b"1", b"2"])
    p = pg.describe_portal(b"")
    pg.exec_(b"deallocate conf_ps")
    return e.get_value(0, 0) == b"3", {"prep": pq.ExecStatus(r.status).name, "nparams": d.nparams,
                                       "paramtypes": [d.param_type(i) for i in range(d.nparams)],
                                       "fields": [d.fname(i) for i in range(d.nfields)],
                                       "value": e.get_value(0, 0), "portal": pq.ExecStatus(p.status).name}


@case("pipeline.mixed")
def _():
    out = []
    with conn.pipeline() as p:
        c1 = conn.execute("select 1")
        c2 = conn.execute("select %s::text", ("two",))
        c3 = conn.cursor()
        c3.executemany("select %s", [(i,) for i in range(5)])
        p.sync()
        out = [c1.fetchone(), c2.fetchone()]
    return out == [(1,), ("two",)], out


@case("pipeline.error_then_recover")
def _():
    seen = []
    try:
        with conn.pipeline():
            conn.execute("select 1")
            conn.execute("select 1/0")
            conn.execute("select 2")
    except psycopg.Error as e:
        seen.append(error_obs(e))
    seen.append(conn.execute("select 3").fetchone())
    return seen[-1] == (3,), seen


@case("transaction.block")
def _():
    with connect() as c:
        with c.transaction():
            c.execute("create temp table conf_py_t (v int)")
            c.execute("insert into conf_py_t values (1), (2)")
        ok, e = expect_error(lambda: c.execute("select 1/0"))
        st1 = c.info.transaction_status.name
        c.rollback()
        v = c.execute("select sum(v) from conf_py_t").fetchone()
        return ok and v == (3,), {"error": e, "status_after_error": st1, "sum": v}


@case("cursor.server_side")
def _():
    with connect() as c:
        with c.cursor(name="conf_ssc") as cur:
            cur.itersize = 7
            cur.execute("select g from generate_series(1, 50) g")
            first = cur.fetchmany(10)
            rest = cur.fetchall()
        return len(first) + len(rest) == 50, {"first": first[:3], "n": len(first) + len(rest)}


@case("cursor.scrollable_binary")
def _():
    with connect() as c:
        with c.cursor(name="conf_scroll", scrollable=True, binary=True) as cur:
            cur.execute("select g, g::text from generate_series(1, 20) g")
            cur.scroll(5)
            a = cur.fetchone()
            cur.scroll(0, mode="absolute")
            b = cur.fetchone()
        return a == (6, "6") and b == (1, "1"), [a, b]


@case("stream.execute_stream")
def _():
    n = 1000000 if FULL else 20000
    total = count = 0
    for (g,) in conn.cursor().stream("select g from generate_series(1, %s) g", (n,)):
        total += g
        count += 1
    return count == n, {"count": count, "sum": total}


ROWS = 1000000 if FULL else 10000
for fmt in ("text", "csv", "binary"):
    opt = {"text": "", "csv": "(format csv)", "binary": "(format binary)"}[fmt]

    @case(f"copy.out_{fmt}")
    def _(opt=opt):
        h, n = __import__("hashlib").sha256(), 0
        with conn.cursor().copy(f"copy (select g, 'v' || g, g * 1.5 from generate_series(1, {ROWS})"
                                f" g) to stdout {opt}") as cp:
            for block in cp:
                h.update(block)
                n += len(block)
        return n > ROWS, {"bytes": n, "sha256": h.hexdigest()}

    @case(f"copy.in_{fmt}")
    def _(opt=opt, fmt=fmt):
        with connect(autocommit=True) as c:
            c.execute("create temp table conf_py_copy (a int, b text, c timestamptz)")
            with c.cursor().copy(f"copy conf_py_copy from stdin {opt}") as cp:
                if fmt == "binary":
                    cp.set_types(["int4", "text", "timestamptz"])
                import datetime
                ts = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
                if fmt == "csv":  # psycopg formats rows as text or binary only
                    cp.write("".join(f'{i},"r{i},""q""\t\\",2024-01-01 00:00:00+00\n'
                                     for i in range(ROWS)))
                else:
                    for i in range(ROWS):
                        cp.write_row((i, f"r{i},\"q\"\t\\", ts))
            r = c.execute("select count(*), sum(a), md5(string_agg(b || c::text, '|' order by a))"
                          " from conf_py_copy").fetchone()
            return r[0] == ROWS, [str(x) for x in r]


def _copy_bad(c):
    with c.cursor().copy("copy conf_py_ce from stdin") as cp:
        cp.write(b"1\nxx\n")


@case("copy.out_session_tables")
def _():
    # COPY <table> TO STDOUT of a temp table, of a table created in this session and of one
    # created in the still-open transaction
    out = {}
    with connect(autocommit=True) as c:
        c.execute("create temp table conf_py_tmp as select g, 'v' || g as v from generate_series(1, 3) g")
        c.execute("drop table if exists public.conf_py_sess")
        c.execute("create table public.conf_py_sess as select g from generate_series(1, 3) g")
        for name, t in (("temp", "conf_py_tmp"), ("session", "public.conf_py_sess")):
            try:
                with c.cursor().copy(f"copy {t} to stdout") as cp:
                    out[name] = b"".join(bytes(b) for b in cp).decode()
            except psycopg.Error as e:
                out[name] = error_obs(e)
        c.execute("drop table public.conf_py_sess")
        try:
            with c.transaction():
                c.execute("create table public.conf_py_tx as select g from generate_series(1, 2) g")
                with c.cursor().copy("copy public.conf_py_tx to stdout (format csv)") as cp:
                    out["transaction"] = b"".join(bytes(b) for b in cp).decode()
                c.execute("drop table public.conf_py_tx")
        except psycopg.Error as e:  # the transaction is rolled back, the table with it
            out["transaction"] = error_obs(e)
    return all(isinstance(v, str) for v in out.values()), out


@case("copy.in_error")
def _():
    with connect(autocommit=True) as c:
        c.execute("create temp table conf_py_ce (a int)")
        ok, e = expect_error(lambda: _copy_bad(c))
        return ok, {"error": e, "after": c.execute("select count(*) from conf_py_ce").fetchone()}


@case("notify.pid_matches_backend")
def _():
    with connect(autocommit=True) as c:
        got = []
        c.add_notify_handler(got.append)
        c.execute("listen conf_py_chan")
        c.execute("notify conf_py_chan, 'payload'")
        if not got:  # not yet read with the NOTIFY's own answer: wait for it
            gen = c.notifies()
            got.append(next(gen))
            gen.close()
        n = got[0]
        mypid = c.execute("select pg_backend_pid()").fetchone()[0]
        return n.pid == c.info.backend_pid == mypid, {
            "channel": n.channel, "payload": n.payload, "pid_is_backend_pid": n.pid == mypid,
            "info_pid_is_backend_pid": c.info.backend_pid == mypid}


@case("cancel.running_query")
def _():
    with connect(autocommit=True) as c:
        def cancel_when_active():
            with connect(autocommit=True) as w:
                while not w.execute("select count(*) from pg_stat_activity where pid = %s and "
                                    "state = 'active'", (c.info.backend_pid,)).fetchone()[0]:
                    pass
            c.cancel()
        t = threading.Thread(target=cancel_when_active)
        t.start()
        ok, e = expect_error(lambda: c.execute("select pg_sleep(30)"))
        t.join()
        return ok and e.get("sqlstate") == "57014", {"error": e,
                                                     "after": c.execute("select 1").fetchone()}


for name, q in [("syntax", "selec 1"), ("syntax_position", "select 1 from from t"),
                ("syntax_unterminated", "select 'abc"), ("undefined_column", "select nope from pg_class"),
                ("undefined_function", "select no_such_fn(1)"),
                ("division_by_zero", "select 1/0"),
                ("raise", "do $$ begin raise exception 'custom %', 42 using detail = 'the detail',"
                          " hint = 'the hint', errcode = 'P0042'; end $$"),
                ("plpgsql_context", "do $$ begin perform 1/0; end $$")]:
    @case(f"error.{name}")
    def _(q=q):
        return expect_error(lambda: conn.execute(q))

    @case(f"error.{name}_simple")
    def _(q=q):
        r = conn.pgconn.exec_(q.encode())
        return r.status == pq.ExecStatus.FATAL_ERROR, {
            "status": pq.ExecStatus(r.status).name, "sqlstate": r.error_field(pq.DiagnosticField.SQLSTATE),
            "message": r.error_field(pq.DiagnosticField.MESSAGE_PRIMARY),
            "position": r.error_field(pq.DiagnosticField.STATEMENT_POSITION)}


@case("error.unique_violation_fields")
def _():
    with connect(autocommit=True) as c:
        c.execute("create temp table conf_py_u (id int constraint conf_py_u_pk primary key)")
        c.execute("insert into conf_py_u values (1)")
        return expect_error(lambda: c.execute("insert into conf_py_u values (1)"))


@case("error.notice_and_warning")
def _():
    seen = []
    with connect(autocommit=True) as c:
        c.add_notice_handler(lambda d: seen.append((d.severity_nonlocalized, d.sqlstate,
                                                    d.message_primary)))
        c.execute("do $$ begin raise notice 'n1'; raise warning 'w1'; end $$")
        c.execute("drop table if exists conf_py_no_such_table")
    return len(seen) == 3, seen


@case("empty.libpq_simple")
def _():
    return True, [pq.ExecStatus(conn.pgconn.exec_(q).status).name for q in (b"", b";", b"-- c\n", b"/* c */")]


@case("empty.libpq_extended")
def _():
    return True, [pq.ExecStatus(conn.pgconn.exec_params(q, []).status).name for q in (b"", b";", b"-- c")]


@case("empty.execute")
def _():
    cur = conn.execute("")
    return True, {"status": cur.statusmessage, "pgresult": pq.ExecStatus(cur.pgresult.status).name,
                  "description": cur.description}


@case("startup.options")
def _():
    with connect(application_name="conf-py", options="-c search_path=pg_catalog,public "
                 "-c conf.var=xyz -c statement_timeout=4321 -c DateStyle=SQL,DMY") as c:
        r = c.execute("select current_setting('application_name'), current_setting('search_path'),"
                      " current_setting('conf.var', true), current_setting('statement_timeout'),"
                      " current_setting('DateStyle')").fetchone()
        return r[2] == "xyz", {"settings": r, "param_datestyle": c.info.parameter_status("DateStyle"),
                               "param_app": c.info.parameter_status("application_name")}


@case("startup.bad_option_value")
def _():
    return expect_error(lambda: connect(options="-c statement_timeout=notanumber").close())


@case("startup.unknown_setting")
def _():
    return expect_error(lambda: connect(options="-c no_such_setting=1").close())


@case("startup.unknown_database")
def _():
    return expect_error(lambda: connect(dbname="no_such_db_conf").close())


@case("auth.wrong_password")
def _():
    # psycopg does not expose the SQLSTATE of a failed connection attempt (libpq/jdbc check it)
    ok, e = expect_error(lambda: connect(password="wrong-password").close())
    return ok, {"refused": ok, "class": e.get("class") if ok else None}


for mode in ("disable", "allow", "prefer", "require", "verify-ca"):
    @case(f"tls.{mode}")
    def _(mode=mode):
        with connect(sslmode=mode) as c:
            return True, {"ssl_in_use": bool(c.pgconn.ssl_in_use), "v": c.execute(
                "select 1").fetchone()}


@case("tls.verify_full")
def _():
    with connect(sslmode="verify-full") as c:
        return True, {"ssl_in_use": bool(c.pgconn.ssl_in_use),
                      "v": c.execute("select 1").fetchone()}


@case("params.65535")
def _():
    n = 65535
    q = "select array_length(array[" + ",".join(["%s"] * n) + "]::int[], 1)"
    r = conn.execute(q, list(range(n))).fetchone()
    return r == (n,), r


@case("params.65536")
def _():
    n = 65536
    ok, e = expect_error(lambda: conn.execute("select " + ",".join(["%s"] * n), list(range(n))))
    return True, {"error": e, "after": conn.execute("select 1").fetchone()}


M2 = 2 * 1024 * 1024


@case("large.result_2mib", timeout=LARGE_TIMEOUT_S)
def _():
    with connect() as c:
        v = c.execute("select repeat('x', %s)", (M2,)).fetchone()[0]
        return len(v) == M2, {"length": len(v)}


@case("large.param_2mib", timeout=LARGE_TIMEOUT_S)
def _():
    with connect() as c:
        r = c.execute("select length(%s::text), md5(%s::text)", ("y" * M2, "y" * M2)).fetchone()
        return r[0] == M2, r


@case("large.bytea_2mib_binary", timeout=LARGE_TIMEOUT_S)
def _():
    with connect() as c:
        data = bytes(range(256)) * (M2 // 256)
        r = c.cursor(binary=True).execute("select %b::bytea", (data,)).fetchone()[0]
        return r == data, {"length": len(r), "sha256": sha(r)}


@case("large.copy_row_2mib", timeout=LARGE_TIMEOUT_S)
def _():
    with connect(autocommit=True) as c:
        c.execute("create temp table conf_py_big (t text)")
        with c.cursor().copy("copy conf_py_big from stdin") as cp:
            cp.write_row(("z" * M2,))
        with c.cursor().copy("copy conf_py_big to stdout") as cp:
            out = b"".join(bytes(b) for b in cp)
        return len(out) == M2 + 1, {"length": len(out)}


@case("large.bytea_100mb", timeout=LARGE_TIMEOUT_S, full_only=True)
def _():
    with connect() as c:
        data = b"\x07" * (100 * 1024 * 1024)
        r = c.cursor(binary=True).execute("select %b::bytea", (data,)).fetchone()[0]
        return r == data, {"length": len(r)}


@case("large.text_1gb", timeout=300, full_only=True)
def _():
    with connect() as c:
        n = 1024 * 1024 * 1023
        r = c.execute("select repeat('x', %s)", (n,)).fetchone()[0]
        return len(r) == n, {"length": len(r)}
