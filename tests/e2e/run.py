#!/usr/bin/env python3
"""run.py: runs every tests/e2e/test_*.py with unittest (verbosity 2) and
ends with one line `e2e: N passed, N failed` (`, N skipped` when some were
skipped). Exit status 1 when anything failed. A failing test also shows the
tail of its poboxd log. Optional arguments: test name patterns (-k)."""

import os
import sys
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402


class Result(unittest.TextTestResult):

    def _show_log(self, test):
        for env in harness.ENVS_BY_TEST.get(test.id(), []):
            text = env.log_text()
            if text:
                self.stream.writeln(f"\n--- poboxd log of {test.id()} ({env.dir}) ---")
                self.stream.writeln(text[-3000:].rstrip())
                self.stream.writeln("--- end of log ---")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._show_log(test)

    def addError(self, test, err):
        super().addError(test, err)
        self._show_log(test)

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._show_log(test)


def main():
    os.chdir(harness.REPO)
    loader = unittest.TestLoader()
    patterns = [a for a in sys.argv[1:] if not a.startswith("-")]
    if patterns:
        loader.testNamePatterns = [p if "*" in p else f"*{p}*" for p in patterns]
    suite = loader.discover(str(HERE), pattern="test_*.py", top_level_dir=str(HERE))
    runner = unittest.TextTestRunner(verbosity=2, resultclass=Result, stream=sys.stdout)
    result = runner.run(suite)
    # A test with failing subtests shows once per subtest in
    # result.failures; count tests, so passed + failed + skipped = run.
    failed_tests = {t.id().split(" ")[0] for t, _ in
                    result.failures + result.errors} | \
        {t.id() for t in result.unexpectedSuccesses}
    failed = len(failed_tests)
    skipped = len(result.skipped)
    passed = result.testsRun - len(failed_tests) - skipped
    if result.testsRun == 0:
        failed = max(failed, 1)
        print("e2e: no tests found")
    line = f"e2e: {passed} passed, {failed} failed"
    if skipped:
        line += f", {skipped} skipped"
    print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
