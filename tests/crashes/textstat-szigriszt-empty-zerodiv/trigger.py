# textstat 0.7.1: szigriszt_pazos("") divides by the word count, 0 for an empty
# text (issue #140); 0.7.2 returns 0.0.
import textstat

print(textstat.szigriszt_pazos(""))
