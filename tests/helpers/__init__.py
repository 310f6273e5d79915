"""What the tests share: private servers, the programs as subprocesses, polling, sample readings.

Imported as ``tests.helpers.<module>``: the repository root is on the path (``pythonpath = .``
in pytest.ini, PYTHONPATH in the Makefile) and ``tests`` is a package, so no test edits sys.path.
"""
