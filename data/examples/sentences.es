Tom me preguntó cómo hacerlo.
Tom le dijo a Mary que podía hacer lo que sea que le gustara.
Lo sabía.
Debíamos haber despegado a las 4:30 p.m.
¿Dónde pasó?
Él me pidió que le tirara la pelota de vuelta.
Me enseñaron algo diferente.
Tom sugirió a Mary que se disculpara ante John.
