"""The webhook connection pool's bounds (automation/actions/webhook_transport.py): idle
connections per key, keys, idle time; only idle connections are kept.

The connections are stand-ins with httpcore's interface (is_idle, has_expired, close): what the
pool decides does not depend on the socket under them. Reuse over real sockets is in
tests/integration/test_webhook_connections.py.
"""

from automation.actions.webhook_transport import ConnectionPool


class Connection:
    def __init__(self, idle=True, server_closed=False):
        self.idle, self.server_closed, self.closed = idle, server_closed, False

    def is_idle(self):
        return self.idle and not self.closed

    def has_expired(self):
        return self.server_closed

    def close(self):
        self.closed = True


class Clock:
    now = 1000.0

    def __call__(self):
        return self.now


A = ("https", "93.184.216.34", 443, "a.example.com")
B = ("https", "93.184.216.34", 443, "b.example.com")


def pool(**bounds):
    clock = Clock()
    return ConnectionPool(clock=clock, **bounds), clock


def test_a_connection_serves_its_own_key_only():
    connections, _ = pool()
    first = Connection()
    connections.give_back(A, first)
    assert connections.take(B) is None
    assert connections.take(A) is first
    assert connections.take(A) is None  # taken: not shared


def test_at_most_per_key_idle_connections_are_kept_and_the_rest_closed():
    connections, _ = pool(per_key=2)
    made = [Connection() for _ in range(3)]
    for connection in made:
        connections.give_back(A, connection)
    assert connections.idle_count(A) == 2
    assert [c.closed for c in made] == [False, False, True]


def test_at_most_so_many_keys_the_least_recently_used_first_out():
    connections, _ = pool(keys=2)
    a, b, c = Connection(), Connection(), Connection()
    connections.give_back(A, a)
    connections.give_back(B, b)
    connections.give_back(A, Connection())  # A used last: B is the oldest
    connections.give_back(("http", "93.184.216.34", 80, "c.example.com"), c)
    assert b.closed and not a.closed and not c.closed
    assert connections.take(B) is None


def test_an_idle_connection_expires_and_one_the_server_closed_is_never_taken():
    connections, clock = pool(idle_seconds=4)
    old, closed_by_server = Connection(), Connection(server_closed=True)
    connections.give_back(A, old)
    clock.now += 5
    connections.give_back(B, closed_by_server)
    assert old.closed, "expired connections go when another comes back"
    assert connections.take(A) is None
    assert connections.take(B) is None and closed_by_server.closed


def test_a_connection_not_idle_is_closed_not_kept():
    """An answer not read to its end, or a server that said "Connection: close", leaves the
    connection in another state than idle (httpcore closes it): never pooled."""
    connections, _ = pool()
    busy = Connection(idle=False)
    connections.give_back(A, busy)
    assert busy.closed and connections.idle_count() == 0
