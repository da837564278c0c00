# jsonpatch 1.32: removing "/foo/-" (the array-append index) does
# `del subobj['-']` on a list (issue #133); the fix raises the library's
# JsonPointerException.
import jsonpatch

print(jsonpatch.apply_patch({"foo": [1, 2]}, [{"op": "remove", "path": "/foo/-"}]))
