# filelock 3.12.2: acquiring a lock whose parent directory does not exist fails in
# os.open (issue #176); 3.12.3 creates the parent directories.
import os
import tempfile

from filelock import FileLock

os.chdir(tempfile.mkdtemp())
lock = FileLock(os.path.join("missing", "app.lock"))
with lock:
    print("locked:", lock.is_locked)
print("released:", not lock.is_locked)
