# unidiff 0.6.0: a diff whose first change is a binary file crashes the parser with
# `patch_info.append(line)` on None (PR #75); 0.7.0 starts a PatchInfo first.
from unidiff import PatchSet

diff = (
    "Binary files a/logo.png and b/logo.png differ\n"
    "--- a/README\n"
    "+++ b/README\n"
    "@@ -1 +1 @@\n"
    "-hello\n"
    "+hello world\n"
)
patch = PatchSet(diff)
for f in patch:
    print(f.path, "binary" if f.is_binary_file else f"+{f.added} -{f.removed}")
