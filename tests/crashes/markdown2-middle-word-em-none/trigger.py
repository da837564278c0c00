# markdown2 2.5.3: extras given as a dict with a None value reach
# MiddleWordEm.__init__ as options=None, which calls options.setdefault()
# (issue #627).
import markdown2

print(repr(markdown2.markdown("snake_case_word and *em*", extras={"middle-word-em": None})))
