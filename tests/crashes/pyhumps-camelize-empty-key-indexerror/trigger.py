# pyhumps 3.5.3: camelize() of a payload with an empty key reads s[0] of '' and
# raises IndexError (issue #256); 3.6.0 leaves an empty string as it is.
import humps

payload = {"user_name": "ada", "": "blank column", "created_at": "2022-04-06"}
print(humps.camelize(payload))
