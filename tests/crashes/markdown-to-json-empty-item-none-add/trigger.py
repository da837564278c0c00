# markdown-to-json 2.1.0: an empty list item renders as None and _render_List
# concatenates the items with operator.add, so list + None raises (PR #28).
import json

import markdown_to_json

print(json.dumps(markdown_to_json.dictify("- a\n-\n- b\n-\n")))
