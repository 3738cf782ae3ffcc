"""pesigitgd's entry point (the ``pesigitgd`` command, ``python -m pesigitg.daemon``).

Signals a starting daemon cannot handle yet are blocked before anything else runs: a
SIGHUP's default action would kill it, and a reload before the workers exist would
report nonsense. They stay pending; the supervisor lets SIGTERM and SIGINT through
once its handlers are installed and the rest once it is ready, so a SIGHUP received
during the start becomes a reload right after it.
"""

import signal
import sys

STARTUP_BLOCKED = {signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM,
                   signal.SIGINT}
signal.pthread_sigmask(signal.SIG_BLOCK, STARTUP_BLOCKED)


def main() -> int:
    try:
        from pesigitg.daemon.main import daemon_main
    except ImportError as exc:
        # The packet path refuses a PESIGITG_AES_PATH it cannot honour when it loads.
        if "PESIGITG_AES_PATH" not in str(exc):
            raise
        print(f"pesigitgd: {exc}", file=sys.stderr)
        return 1
    return daemon_main()


if __name__ == "__main__":
    sys.exit(main())
